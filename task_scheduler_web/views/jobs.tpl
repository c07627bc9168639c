% rebase('base.tpl')
<div class="title-row">
  <h1>{{t('jobs.heading')}}</h1>
  % if h['can']('admin'):
  <a class="btn btn-primary" href="/jobs/new">{{t('nav.new')}}</a>
  % end
</div>
<form class="filters" method="get" action="/jobs" data-testid="job-filter" role="search">
  <label class="grow">{{t('jobs.search')}} <input type="search" name="q" value="{{filters['q']}}" placeholder="{{t('jobs.search_placeholder')}}"></label>
  <label>{{t('jobs.state')}}
    <select name="state">
      <option value="">{{t('filter.any')}}</option>
      % for name in h['job_states']:
      <option value="{{name}}" {{'selected' if filters['state'] == name else ''}}>{{h['word']('state', name)}}</option>
      % end
    </select>
  </label>
  <label>{{t('jobs.source')}}
    <select name="source">
      <option value="">{{t('filter.any')}}</option>
      % for name in ('yaml', 'api'):
      <option value="{{name}}" {{'selected' if filters['source'] == name else ''}}>{{h['word']('source', name)}}</option>
      % end
    </select>
  </label>
  <label>{{t('jobs.kind')}}
    <select name="kind">
      <option value="">{{t('filter.any')}}</option>
      % for name in ('python', 'command', 'heartbeat'):
      <option value="{{name}}" {{'selected' if filters['kind'] == name else ''}}>{{h['word']('kind', name)}}</option>
      % end
    </select>
  </label>
  <label>{{t('jobs.tag')}} <input type="text" name="tag" value="{{filters['tag']}}" size="10"></label>
  <div class="filter-buttons">
    <button type="submit" class="btn">{{t('filter.apply')}}</button>
    <a class="btn btn-quiet" href="/jobs">{{t('filter.clear')}}</a>
  </div>
</form>
<div data-live-region="job-list">
% if jobs:
<div class="table-wrap">
<table class="table jobs-table">
  <thead>
    <tr><th>{{t('jobs.col.job')}}</th><th>{{t('jobs.col.kind')}}</th><th>{{t('jobs.col.trigger')}}</th><th>{{t('jobs.col.state')}}</th><th>{{t('jobs.col.next')}}</th><th>{{t('jobs.col.last')}}</th><th><span class="sr-only">{{t('jobs.col.actions')}}</span></th></tr>
  </thead>
  <tbody>
  % for job in jobs:
    <tr data-testid="job-row" data-job-id="{{job['id']}}" data-state="{{job['state']}}">
      <td data-label="{{t('jobs.col.job')}}">
        <a href="/jobs/{{job['id']}}" class="job-id">{{job['id']}}</a>
        % if job.get('description'):
        <div class="muted small">{{job['description']}}</div>
        % end
        <div class="small"><span class="tag tag-source">{{h['word']('source', job['source'])}}</span>
        % for tag in job.get('tags') or []:
        <span class="tag">{{tag}}</span>
        % end
        </div>
      </td>
      <td data-label="{{t('jobs.col.kind')}}">{{h['word']('kind', job['kind'])}}</td>
      <td data-label="{{t('jobs.col.trigger')}}" class="mono small">{{h['trigger'](job)}}</td>
      <td data-label="{{t('jobs.col.state')}}">
        % include('_badge.tpl', status=job['state'], kind='state')
      </td>
      <td data-label="{{t('jobs.col.next')}}">
        % if job.get('next_run_time'):
        <span title="{{h['time'](job['next_run_time'])}}">{{h['ago'](job['next_run_time'])}}</span>
        % else:
        <span class="muted">—</span>
        % end
      </td>
      <td data-label="{{t('jobs.col.last')}}">
        % if job.get('last_run'):
        <a href="/runs/{{job['last_run']['id']}}" class="badge-link">
          % include('_badge.tpl', status=job['last_run']['status'])
        </a>
        % include('_sla_badges.tpl', run=job['last_run'])
        % else:
        <span class="muted">{{t('jobs.never')}}</span>
        % end
      </td>
      <td data-label="{{t('jobs.col.actions')}}">
        % include('_job_actions.tpl', job=job, next=here)
      </td>
    </tr>
  % end
  </tbody>
</table>
</div>
% include('_pager.tpl')
% else:
<p class="empty">{{t('jobs.none')}} <a href="/jobs">{{t('jobs.show_all')}}</a></p>
% end
</div>
