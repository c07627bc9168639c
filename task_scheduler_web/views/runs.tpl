% rebase('base.tpl')
<h1>{{t('runs.heading')}}</h1>
<form class="filters" method="get" action="/runs" data-testid="run-filter" role="search">
  <label class="grow">{{t('runs.job')}}
    <input type="text" name="job_id" value="{{filters['job_id']}}" list="job-ids" placeholder="{{t('runs.any_job')}}" class="mono">
    <datalist id="job-ids">
      % for job_id in job_ids:
      <option value="{{job_id}}"></option>
      % end
    </datalist>
  </label>
  <label>{{t('runs.status')}}
    <select name="status">
      <option value="">{{t('filter.any')}}</option>
      % for name in h['run_statuses']:
      <option value="{{name}}" {{'selected' if filters['status'] == name else ''}}>{{h['word']('status', name)}}</option>
      % end
    </select>
  </label>
  <div class="filter-buttons">
    <button type="submit" class="btn">{{t('filter.apply')}}</button>
    <a class="btn btn-quiet" href="/runs">{{t('filter.clear')}}</a>
  </div>
</form>
<section class="panel" data-live-region="runs">
% include('_runs_table.tpl')
</section>
