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
  <label>{{t('runs.trigger')}}
    <select name="trigger">
      <option value="">{{t('filter.any')}}</option>
      % for name in triggers:
      <option value="{{name}}" {{'selected' if filters['trigger'] == name else ''}}>{{h['word']('trigger', name)}}</option>
      % end
    </select>
  </label>
  <label>{{t('runs.node')}}
    <input type="text" name="node" value="{{filters['node']}}" list="node-ids" placeholder="{{t('runs.any_node')}}" class="mono" size="16">
    <datalist id="node-ids">
      % for node_id in node_ids:
      <option value="{{node_id}}"></option>
      % end
    </datalist>
  </label>
  <label>{{t('runs.since')}}
    <input type="datetime-local" name="since" value="{{filters['since']}}" step="60">
  </label>
  <label>{{t('runs.until')}}
    <input type="datetime-local" name="until" value="{{filters['until']}}" step="60">
  </label>
  <label class="grow search">{{t('runs.search')}}
    <input type="search" name="q" value="{{filters['q']}}" maxlength="200" placeholder="{{t('runs.search_hint')}}" data-testid="run-search">
  </label>
  <div class="filter-buttons">
    <button type="submit" class="btn">{{t('filter.apply')}}</button>
    <a class="btn btn-quiet" href="/runs">{{t('filter.clear')}}</a>
  </div>
</form>
% if problems:
<div class="error-summary" role="alert">
  <ul>
    % for name, message in problems.items():
    <li data-testid="form-error" data-field="{{name}}">{{t('runs.' + name if name in ('since', 'until', 'trigger', 'node') else 'runs.search')}}: {{message}}</li>
    % end
  </ul>
</div>
% end
% if window:
<p class="hint" data-testid="search-window">{{t('runs.search_window', min=search_min, count=window)}}</p>
% end
<section class="panel" data-live-region="runs">
% include('_runs_table.tpl')
</section>
