% rebase('base.tpl')
<article data-testid="job-detail" data-job-id="{{job['id']}}">
  <div class="title-row">
    <div>
      <p class="crumbs"><a href="/jobs">Jobs</a> /</p>
      <h1><span class="mono">{{job['id']}}</span></h1>
      % if job.get('description'):
      <p class="lead">{{job['description']}}</p>
      % end
    </div>
    <div class="title-actions">
      % include('_job_actions.tpl', job=job, next=here)
      % if job['source'] == 'api':
      <a class="btn" href="/jobs/{{job['id']}}/edit">Edit</a>
      % end
    </div>
  </div>
  <div class="grid-2">
    <section class="panel">
      <h2>Overview</h2>
      <dl class="facts">
        <dt>State</dt><dd>
          % include('_badge.tpl', status=job['state'])
        </dd>
        <dt>Kind</dt><dd>{{job['kind']}}</dd>
        <dt>Trigger</dt><dd class="mono">{{job.get('trigger_text', '')}}</dd>
        <dt>Source</dt><dd>{{job['source']}}</dd>
        <dt>Max instances</dt><dd>{{job.get('max_instances')}}</dd>
        <dt>Timeout</dt><dd>{{'none' if job.get('timeout') is None else str(job['timeout']) + ' s'}}</dd>
        % if job.get('tags'):
        <dt>Tags</dt><dd>
          % for tag in job['tags']:
          <span class="tag">{{tag}}</span>
          % end
        </dd>
        % end
        <dt>Updated</dt><dd>
          % include('_time.tpl', iso=job.get('updated_at'))
        </dd>
      </dl>
      % if job['source'] == 'yaml':
      <p class="note">This job is defined in <span class="mono">jobs.yaml</span>: edit it there and the change is applied on save. It can still be run, paused and resumed here.</p>
      % end
    </section>
    <section class="panel">
      <h2>Next fire times</h2>
      % if job.get('next_run_times'):
      <ol class="times" data-testid="next-fires">
        % for iso in job['next_run_times']:
        <li>
          % include('_time.tpl', iso=iso)
          <span class="muted small">{{h['ago'](iso)}}</span>
        </li>
        % end
      </ol>
      % elif job['state'] == 'paused':
      <p class="muted">Paused: nothing fires until it is resumed.</p>
      % else:
      <p class="muted">No upcoming fire times.</p>
      % end
    </section>
  </div>
  <section class="panel">
    <h2>Definition</h2>
    <pre class="pre" data-testid="job-definition">{{definition}}</pre>
  </section>
  <section class="panel">
    <h2>Runs</h2>
    % include('_runs_table.tpl')
  </section>
  % if job['source'] == 'api':
  <section class="panel danger-zone">
    <details>
      <summary>Delete this job…</summary>
      <form method="post" action="/jobs/{{job['id']}}/delete">
        % include('_csrf.tpl')
        <p>The job and its schedule are removed; its run history is kept until pruned.</p>
        <button type="submit" class="btn btn-danger">Delete {{job['id']}}</button>
      </form>
    </details>
  </section>
  % end
</article>
